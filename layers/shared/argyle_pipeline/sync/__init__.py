"""The sync's rules, talking only to the ports in `ports.py`: `dispatch` routes a message to
`listing` (*_synced, added, resync) or `changes` (updated, removed)."""
