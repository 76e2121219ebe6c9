"""The only modules that call AWS, one per service: DynamoDB tables, the SQS queue, Secrets Manager."""
