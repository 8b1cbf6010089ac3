"""The one block-by-block driver for every method and architecture."""
