"""The only package that imports kubernetes_asyncio.

Reflector, Store, Informer, WorkQueue, rate limiters, leader election, patch helpers and
Events, with client-go's semantics.
"""
