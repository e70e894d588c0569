"""The stream flow: NOTIFY -> hub -> per-client buffers -> Server-Sent Events."""
