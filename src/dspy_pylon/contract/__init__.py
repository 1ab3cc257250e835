"""The compiler contract: a compiled DSPy program as a verifiable, optionally signed artifact.

``manifest`` holds the typed manifest (pydantic, with a published JSON Schema); ``hashing`` the
canonical JSON (RFC 8785) and SHA-256 ids; ``artifact`` what of a DSPy program is hashed and
saved; ``signing`` the BIP-340 signature over an in-toto-style statement; ``compatibility``
the pure checks of a manifest's requirements against a runtime; ``files`` and ``loading`` the
I/O edge (``program.json`` + ``manifest.json`` in a directory); ``compiling`` ``pylon.compile``.
"""
