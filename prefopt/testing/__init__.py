"""Test helpers that ship with prefopt (a local fault-injecting judge server)."""
