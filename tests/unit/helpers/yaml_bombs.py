"""Hostile YAML for the parsers of untrusted ConfigMaps."""

ALIAS_BOMB = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['lol'] * 9)}]\n"
    for prev, name in zip(["", *"abcdefgh"], "abcdefghi", strict=True)
)
"""Nine levels of nine aliases: a few hundred bytes, 9**9 (387 million) strings once expanded."""
