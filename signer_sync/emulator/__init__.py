"""A local AWS Signer API emulator that speaks the REST-JSON wire protocol boto3 uses."""
