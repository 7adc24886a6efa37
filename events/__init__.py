"""Event schemas, validation and publishing."""
