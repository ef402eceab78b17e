"""Attack tests: what an attacker (or a careless host) did, and what the observer still shows."""
