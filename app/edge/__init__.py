"""What stands between the network and the flows: tokens, origins, limits, connection logs."""
