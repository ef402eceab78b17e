"""Versions of the agent package and of the wire protocol it speaks."""

AGENT_VERSION = "0.1.0"
# Bump on any incompatible change to the handshake or to a wire record's field order
# (3: snapshots and task listings carry TaskListing deltas in chunks; 4: task rows say
# whether their time is the creation time and what a failed task raised, history samples
# count the agent's threads apart from the host's).
PROTOCOL_VERSION = 4
