"""Test doubles shared by the test suites: fake DAG services and generated media."""
