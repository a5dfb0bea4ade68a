"""Research (issue 23): mean confidence against accuracy of today's graph step, label-free (sqrt(2)), on the held-out
halves.

    PYTHONPATH=$PWD GRAPH_CACHE=/tmp/r54/cache python bench/research_graph_easy_confidence.py DATA...
"""

import math
import sys
from pathlib import Path

sys.path.insert(0, "bench")
import research_graph as rg  # noqa: E402
import research_graph_easy as e  # noqa: E402

from pairwise_core.graph import sharpen  # noqa: E402

for d in sys.argv[1:]:
    cat, priors, nbs = e.grid_inputs(Path(d), 50, [128])
    f = e.propagated(cat, priors, nbs[128], 20, 1.0, 0.8, 10)
    m = ~cat.tune
    for v in e.OUTS:
        p = sharpen(f[v], math.sqrt(2))[m]
        r = priors[v][m]
        print(f"{cat.name} {v}: graph acc {rg.acc(cat.gold[m], p.argmax(1)):.3f} conf {p.max(1).mean():.3f} "
              f"ECE {rg.ece(p, cat.gold[m]):.3f}; refined acc {rg.acc(cat.gold[m], r.argmax(1)):.3f} "
              f"conf {r.max(1).mean():.3f}")
