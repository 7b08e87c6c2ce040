"""The dashboard's building blocks, one per kind of panel: every panel of a kind looks and reads the same
(datasource, legend, tooltip, colours), so a section says only what differs."""

from __future__ import annotations

from typing import Protocol, Self, TypeVar

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders.dashboard import (
    DatasourceVariable,
    FieldColor,
    QueryVariable,
    Row,
    ThresholdsConfig,
)
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.builders.stat import Panel as Stat
from grafana_foundation_sdk.builders.statetimeline import Panel as StateTimeline
from grafana_foundation_sdk.builders.timeseries import Panel as Timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dashboard_model
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    FieldColorModeId,
    Threshold,
    ThresholdsMode,
    ValueMap,
    ValueMappingResult,
    VariableRefresh,
    VariableSort,
)

from istio.monitoring.series import INFO, NS, STATE, STREAMS_STARTED

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
"""Every panel reads the data source picked in the ``datasource`` variable: no uid of one Grafana."""

PER_TIER = "{{model}} / {{tier}}"
"""The legend of a series per model and tier."""


def query(expr: str, legend: str, ref: str = "A") -> Dataquery:
    return Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DATASOURCE)


def queries(*pairs: tuple[str, str]) -> list[Dataquery]:
    return [query(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(pairs)]


def legend(table: bool = False) -> common_builders.VizLegendOptions:
    """A list, or a table with the last and highest values where those are what one reads off."""
    found = common_builders.VizLegendOptions().show_legend(True).placement(common.LegendPlacement.BOTTOM)
    if table:
        return found.display_mode(common.LegendDisplayMode.TABLE).calcs(["lastNotNull", "max"])
    return found.display_mode(common.LegendDisplayMode.LIST).calcs([])


def tooltip() -> common_builders.VizTooltipOptions:
    return common_builders.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI).sort(common.SortOrder.DESCENDING)


def thresholds(*steps: tuple[float | None, str]) -> ThresholdsConfig:
    return ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps([Threshold(value, color) for value, color in steps])


def value_map(codes: dict[str, int], looks: dict[str, tuple[str, str]]) -> ValueMap:
    """Names and colours for the numbers :func:`istio.monitoring.series.coded` turns states into."""
    return ValueMap(
        {
            str(code): ValueMappingResult(text=looks[state][0], color=looks[state][1], index=index)
            for index, (state, code) in enumerate(codes.items())
        }
    )


class Placeable(Protocol):
    """The calls :func:`placed` makes, typed once: the SDK's panel builders share no base class."""

    def id(self, id_val: int, /) -> Self: ...

    def title(self, title: str, /) -> Self: ...

    def description(self, description: str, /) -> Self: ...

    def datasource(self, datasource: DataSourceRef, /) -> Self: ...

    def targets(self, targets: list[cogbuilder.Builder[cogvariants.Dataquery]], /) -> Self: ...

    def span(self, w: int, /) -> Self: ...

    def height(self, h: int, /) -> Self: ...


PanelT = TypeVar("PanelT", bound=Placeable)


def placed(
    panel: PanelT, panel_id: int, title: str, description: str, targets: list[Dataquery], width: int, height: int
) -> PanelT:
    """What no panel of the dashboard chooses for itself: every one reads through the datasource variable."""
    return (
        panel.id(panel_id)
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(list(targets))
        .span(width)
        .height(height)
    )


def timeseries(
    panel_id: int,
    title: str,
    description: str,
    unit: str,
    targets: list[Dataquery],
    *,
    width: int = 8,
    height: int = 8,
    stacked: bool = False,
    bars: bool = False,
    max_value: float | None = None,
    table: bool = False,
) -> Timeseries:
    panel = (
        placed(Timeseries(), panel_id, title, description, targets, width, height)
        .unit(unit)
        .min(0)
        .legend(legend(table))
        .tooltip(tooltip())
        .line_width(1)
        .fill_opacity(20 if stacked or bars else 10)
        .show_points(common.VisibilityMode.NEVER)
        .draw_style(common.GraphDrawStyle.BARS if bars else common.GraphDrawStyle.LINE)
        .stacking(
            common_builders.StackingConfig().mode(common.StackingMode.NORMAL if stacked else common.StackingMode.NONE)
        )
    )
    if max_value is not None:
        panel = panel.max(max_value)
    return panel


def state_timeline(
    panel_id: int,
    title: str,
    description: str,
    target: Dataquery,
    mapping: ValueMap,
    *,
    width: int,
    height: int = 9,
) -> StateTimeline:
    return (
        placed(StateTimeline(), panel_id, title, description, [target], width, height)
        .mappings([mapping])
        .thresholds(thresholds((None, "green")))
        .color_scheme(FieldColor().mode(FieldColorModeId.THRESHOLDS))
        .show_value(common.VisibilityMode.NEVER)
        .merge_values(True)
        .row_height(0.9)
        .fill_opacity(80)
        .line_width(0)
        .legend(legend())
        .tooltip(tooltip())
    )


def stat(
    panel_id: int,
    title: str,
    description: str,
    target: Dataquery,
    steps: ThresholdsConfig,
    *,
    width: int = 4,
    height: int = 9,
) -> Stat:
    return (
        placed(Stat(), panel_id, title, description, [target], width, height)
        .thresholds(steps)
        .color_scheme(FieldColor().mode(FieldColorModeId.THRESHOLDS))
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.NONE)
        .text_mode(common.BigValueTextMode.VALUE)
        .justify_mode(common.BigValueJustifyMode.AUTO)
        .orientation(common.VizOrientation.AUTO)
        .no_value("0")
    )


def label_values(name: str, title: str, series: str, label: str, description: str) -> QueryVariable:
    """A multi-value variable of the values ``label`` takes in ``series``, All included: a dashboard
    opens on every namespace and model, and narrows from there."""
    return (
        QueryVariable(name)
        .label(title)
        .description(description)
        .datasource(DATASOURCE)
        .query(f"label_values({series}, {label})")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
    )


def variables() -> list[cogbuilder.Builder[dashboard_model.VariableModel]]:
    return [
        DatasourceVariable("datasource").label("Data source").type("prometheus"),
        label_values("namespace", "Namespace", INFO, "namespace", "Namespaces where modelguard runs."),
        label_values(
            "model",
            "Model",
            f"{STATE}{{{NS}}}",
            "model",
            "Models of the live policy, as modelguard names them in its metrics.",
        ),
        label_values(
            "proxy_namespace",
            "Envoy namespace",
            STREAMS_STARTED,
            "namespace",
            "Namespaces of the Envoy proxies (gateways, sidecars) that run modelguard's ext_proc filter.",
        ),
    ]


class Section:
    """A row of the dashboard and the panels under it, laid out left to right, 24 columns a line: the
    dashboard places rows, a row's panels need no coordinates."""

    def __init__(self, title: str, row_id: int, *panels: cogbuilder.Builder[dashboard_model.Panel]) -> None:
        self.row = Row(title).id(row_id).collapsed(False)
        self.panels = list(panels)
