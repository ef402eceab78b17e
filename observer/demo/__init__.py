"""A production-like demo service with the agent embedded: `observer demo`, tests, benches."""
