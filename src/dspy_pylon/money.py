"""Amounts: pylon counts money in integer millisatoshis (no DSPy needed here)."""

from __future__ import annotations


def msats_to_sats(msats: int) -> int:
    """Satoshis for an amount of millisatoshis, rounded up (a partial sat is a sat paid)."""
    return -(-msats // 1000)
