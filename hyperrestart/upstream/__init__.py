"""Running the upstreams: their envs, the tiny model and data, the restart scheduler, and `hyperrestart run`."""
