"""Attack tests: what an attacker did, what the host and a real operator saw, nothing lost."""
