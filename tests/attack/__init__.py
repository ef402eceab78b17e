"""Attacks on the agent's listener and login, each against a real agent subprocess."""
