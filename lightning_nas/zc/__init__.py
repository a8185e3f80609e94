"""Zero-cost proxies and the ZC vector z(x) of a cell (paper Eq. 1; DESIGN.md §4)."""

from .proxies import (
    PROXIES,
    ProxyError,
    evaluate_proxies,
    lnwot,
    naswot,
    scores,
    snip,
    snip_ssnr,
    tcet,
    zen_score,
    zico,
)

__all__ = [
    "PROXIES",
    "ProxyError",
    "evaluate_proxies",
    "lnwot",
    "naswot",
    "scores",
    "snip",
    "snip_ssnr",
    "tcet",
    "zen_score",
    "zico",
]
from .vector import PROBE_SOURCES, ZC_NAMES, Probe, ZCNormaliser, cell_scores, probe_network, zc_vector

__all__ += ["PROBE_SOURCES", "ZC_NAMES", "Probe", "ZCNormaliser", "cell_scores", "probe_network", "zc_vector"]
from .az_nas import AZ_NAS_COMPONENTS, az_nas_aggregate, az_nas_blocks, az_nas_cell, az_nas_components

__all__ += ["AZ_NAS_COMPONENTS", "az_nas_aggregate", "az_nas_blocks", "az_nas_cell", "az_nas_components"]
