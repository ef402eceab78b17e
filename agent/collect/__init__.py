"""Pure probes: each reads host state and returns wire records, guarded, never raising."""
