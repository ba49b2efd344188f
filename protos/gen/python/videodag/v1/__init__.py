"""Generated code for the videodag contract; do not edit."""
