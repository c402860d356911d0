"""A self-hosted Discord bot that generates images with /imagine."""
