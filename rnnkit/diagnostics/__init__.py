"""Diagnostics: see inside a recurrent network.

- :func:`observe` — per-step states and gate activations of every rnnkit layer;
- :func:`gradient_flow`, :func:`jacobian_spectral_norms`, :func:`fresh_gradient_flow` —
  ‖∂L/∂h_t‖ through time and the recurrent Jacobian (vanishing / exploding gradients);
- :func:`gate_saturation` — Karpathy et al. (2015) gate statistics;
- :func:`text_activations`, :func:`correlated_units`, :data:`SIGNALS` — hidden units over text;
- :mod:`~rnnkit.diagnostics.plots` — PNG figures (matplotlib, ``rnnkit[plot]``);
- :func:`build_report` / :func:`write_report` — the self-contained HTML report.
"""

from .gates import SIGMOID_GATES, GateSaturation, gate_saturation, observed_gate_saturation
from .gradflow import (
    GradFlowConfig,
    GradFlowResult,
    fresh_gradient_flow,
    gradient_flow,
    jacobian_spectral_norms,
    recurrent_jacobians,
)
from .observe import Observation, observe
from .report import (
    AttentionExample,
    Probe,
    ReportConfig,
    ReportData,
    analyse,
    build_report,
    read_metrics,
    render_html,
    write_report,
)
from .units import (
    SIGNALS,
    UnitCorrelation,
    bracket_depth,
    correlated_units,
    indentation,
    inside_quote,
    pearson_per_unit,
    position_in_line,
    text_activations,
)

__all__ = [
    "SIGMOID_GATES",
    "SIGNALS",
    "AttentionExample",
    "GateSaturation",
    "GradFlowConfig",
    "GradFlowResult",
    "Observation",
    "Probe",
    "ReportConfig",
    "ReportData",
    "UnitCorrelation",
    "analyse",
    "bracket_depth",
    "build_report",
    "correlated_units",
    "fresh_gradient_flow",
    "gate_saturation",
    "gradient_flow",
    "indentation",
    "inside_quote",
    "jacobian_spectral_norms",
    "observe",
    "observed_gate_saturation",
    "pearson_per_unit",
    "position_in_line",
    "read_metrics",
    "recurrent_jacobians",
    "render_html",
    "text_activations",
    "write_report",
]
