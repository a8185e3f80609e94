"""Zero-cost proxies and the ZC vector z(x) of a cell (paper Eq. 1; DESIGN.md §4)."""

from .az_nas import AZ_NAS_COMPONENTS, az_nas_aggregate, az_nas_blocks, az_nas_cell, az_nas_components
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
from .vector import PROBE_SOURCES, ZC_NAMES, Probe, ZCNormaliser, cell_scores, probe_network, zc_vector

__all__ = [
    "AZ_NAS_COMPONENTS",
    "PROBE_SOURCES",
    "PROXIES",
    "ZC_NAMES",
    "Probe",
    "ProxyError",
    "ZCNormaliser",
    "az_nas_aggregate",
    "az_nas_blocks",
    "az_nas_cell",
    "az_nas_components",
    "cell_scores",
    "evaluate_proxies",
    "lnwot",
    "naswot",
    "probe_network",
    "scores",
    "snip",
    "snip_ssnr",
    "tcet",
    "zen_score",
    "zc_vector",
    "zico",
]
