"""Fixed values for local development only (named in the README). Deployed stacks never use them."""

# The webhook secret that signs the samples in events/ and that the local stack accepts.
LOCAL_DEV_SECRET = "argyle-local-dev-secret"  # noqa: S105 - published, local-only
# The Argyle sandbox's API keys in the local stack.
SANDBOX_API_KEY_ID = "sandbox-key-id"
SANDBOX_API_KEY_SECRET = "sandbox-key-secret"  # noqa: S105 - published, local-only
REGION = "us-east-1"
