"""Nostr: the sans-IO NIP-90 / NIP-89 codec, and the one background thread that owns relay I/O."""
