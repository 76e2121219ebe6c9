"""Fixed values for local development only (named in the README). Deployed stacks never use them."""

# The webhook secret that signs the samples in events/ and that the local stack accepts.
LOCAL_DEV_SECRET = "argyle-local-dev-secret"
# The Argyle sandbox's API keys in the local stack.
SANDBOX_API_KEY_ID = "sandbox-key-id"
SANDBOX_API_KEY_SECRET = "sandbox-key-secret"
REGION = "us-east-1"
# Physical names in the local stack are "<prefix>-<LogicalId>", so tools and events/env.json can name them.
LOCAL_PREFIX = "local"
DEFAULT_MOTO_PORT = 4566
DEFAULT_RECEIVER_PORT = 3000
DEFAULT_SANDBOX_PORT = 4010
