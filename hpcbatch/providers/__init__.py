"""Node providers (ssh, local): start, check and stop nodes; pool trust; the inventory."""
