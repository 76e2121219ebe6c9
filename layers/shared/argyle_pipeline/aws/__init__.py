"""The only modules that call AWS, one per service: DynamoDB tables (and the sync's client and its
retries), the SQS queue, Secrets Manager."""
