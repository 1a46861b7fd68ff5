"""What the unit tests share: fakes of the world a reconciler sees."""
