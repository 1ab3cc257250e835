"""The swarm: chat jobs over NIP-90, the customer side, the provider node, discovery and reputation."""
