"""Payments: NWC wallets, the development wallet, invoice checks and the spend ledger."""
