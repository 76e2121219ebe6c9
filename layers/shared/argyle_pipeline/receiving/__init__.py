"""What the receiver needs, and nothing else: its cold start imports only this wing (and aws.event_queue)."""
