"""Dataset uploads: decoding and checking images and zips, duplicate hashes, crops."""
