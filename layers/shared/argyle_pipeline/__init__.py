"""Code shared by the receiver and the sync Lambdas (deployed as the SharedLayer)."""
