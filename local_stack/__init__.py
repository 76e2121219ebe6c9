"""The whole pipeline on one machine: moto's server for AWS, the Argyle sandbox, the two functions."""
