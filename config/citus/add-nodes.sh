#!/bin/sh
# docker-compose.citus.yml's one-shot: the coordinator learns its own name and adds the
# workers, each once (a node already there is left as it is).
set -eu
psql -v ON_ERROR_STOP=1 -h postgres -U postgres -d mark_notify <<'SQL'
SELECT citus_set_coordinator_host('postgres', 5432);
SELECT citus_add_node(w, 5432)
FROM unnest(ARRAY['worker1', 'worker2']) AS w
WHERE NOT EXISTS (SELECT 1 FROM pg_dist_node AS n WHERE n.nodename = w);
SQL
