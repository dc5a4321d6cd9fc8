"""The Smart Leginon application for multi-grid screening with the Ptolemy nodes.

``ptolemy_screening.xml`` (beside this module) is written by :func:`write_xml`
in the format of Leginon's application dumps (``leginon/applications/*.xml``,
read by ``leginon.importexport.XMLApplicationImport``): the node and event
wiring of Leginon's MSI-Ptolemy application, with ``Square Targeting`` run by
``PtolemySquareFinder`` and ``Exposure Targeting`` by ``PtolemyHoleFinder``.
Import it in Leginon's Application menu ("Import") after enabling the nodes.

Regenerate with ``python -m ptolemy_leginon.application``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

APPLICATION_NAME = "Ptolemy-MSI-Screening"
APPLICATION_VERSION = 1
XML_PATH = Path(__file__).with_name("ptolemy_screening.xml")

#: (class, alias, launcher alias)
NODES: list[tuple[str, str, str]] = [
    ("EM", "Instrument", "scope"),
    ("AlignZeroLossPeak", "Align ZLP", "main"),
    ("BufferCycler", "Buffer Cycling", "main"),
    ("TransformManager", "Target Adjustment", "main"),
    ("Acquisition", "Preview", "main"),
    ("PtolemySquareFinder", "Square Targeting", "main"),
    ("Acquisition", "Grid", "main"),
    ("Corrector", "Correction", "main"),
    ("Acquisition", "Square", "main"),
    ("PtolemyHoleFinder", "Exposure Targeting", "main"),
    ("JAHCFinder", "Hole Targeting", "main"),
    ("Focuser", "Focus", "main"),
    ("FFTMaker", "Exposure FFT", "main"),
    ("Acquisition", "Exposure", "main"),
    ("DriftManager", "Drift Monitor", "main"),
    ("Navigator", "Navigation", "main"),
    ("Acquisition", "Hole", "main"),
    ("PresetsManager", "Presets Manager", "main"),
    ("Focuser", "Z Focus", "main"),
    ("MosaicTargetMaker", "Grid Targeting", "main"),
    ("BeamTiltCalibrator", "Beam Tilt", "main"),
    ("AutoNitrogenFiller", "N2 Filling", "main"),
    ("BeamTiltImager", "Beam Tilt Image", "main"),
    ("TEMController", "Scope Control", "main"),
]
BINDINGS: list[tuple[str, str, str]] = [
    ("MoveToTargetEvent", "Align ZLP", "Navigation"),
    ("ChangePresetEvent", "Align ZLP", "Presets Manager"),
    ("TransformTargetDoneEvent", "Target Adjustment", "Hole"),
    ("TransformTargetDoneEvent", "Target Adjustment", "Exposure"),
    ("TransformTargetDoneEvent", "Target Adjustment", "Focus"),
    ("TransformTargetDoneEvent", "Target Adjustment", "Z Focus"),
    ("TransformTargetDoneEvent", "Target Adjustment", "Preview"),
    ("ChangePresetEvent", "Target Adjustment", "Presets Manager"),
    ("MoveToTargetEvent", "Target Adjustment", "Navigation"),
    ("TransformTargetDoneEvent", "Target Adjustment", "Square"),
    ("TransformTargetEvent", "Preview", "Target Adjustment"),
    ("ChangePresetEvent", "Preview", "Presets Manager"),
    ("MoveToTargetEvent", "Preview", "Navigation"),
    ("ImageTargetListPublishEvent", "Square Targeting", "Square"),
    ("AcquisitionImagePublishEvent", "Grid", "Square Targeting"),
    ("ChangePresetEvent", "Grid", "Presets Manager"),
    ("MoveToTargetEvent", "Grid", "Navigation"),
    ("TargetListDoneEvent", "Grid", "Square Targeting"),
    ("ChangePresetEvent", "Square", "Presets Manager"),
    ("AcquisitionImagePublishEvent", "Square", "Hole Targeting"),
    ("MoveToTargetEvent", "Square", "Navigation"),
    ("TransformTargetEvent", "Square", "Target Adjustment"),
    ("QueuePublishEvent", "Exposure Targeting", "Exposure"),
    ("ImageTargetListPublishEvent", "Exposure Targeting", "Exposure"),
    ("ImageProcessDoneEvent", "Exposure Targeting", "Hole"),
    ("ImageTargetListPublishEvent", "Hole Targeting", "Hole"),
    ("ImageProcessDoneEvent", "Hole Targeting", "Square"),
    ("QueuePublishEvent", "Hole Targeting", "Hole"),
    ("TransformTargetEvent", "Focus", "Target Adjustment"),
    ("DriftMonitorRequestEvent", "Focus", "Drift Monitor"),
    ("ChangePresetEvent", "Focus", "Presets Manager"),
    ("TargetListDoneEvent", "Focus", "Exposure"),
    ("MoveToTargetEvent", "Focus", "Navigation"),
    ("AlignZeroLossPeakPublishEvent", "Exposure", "Align ZLP"),
    ("TransformTargetEvent", "Exposure", "Target Adjustment"),
    ("ImageTargetListPublishEvent", "Exposure", "Preview"),
    ("ImageTargetListPublishEvent", "Exposure", "Focus"),
    ("ChangePresetEvent", "Exposure", "Presets Manager"),
    ("TargetListDoneEvent", "Exposure", "Exposure Targeting"),
    ("AcquisitionImagePublishEvent", "Exposure", "Exposure FFT"),
    ("MoveToTargetEvent", "Exposure", "Navigation"),
    ("FixConditionEvent", "Exposure", "N2 Filling"),
    ("AcquisitionImagePublishEvent", "Drift Monitor", "Focus"),
    ("ChangePresetEvent", "Drift Monitor", "Presets Manager"),
    ("DriftMonitorResultEvent", "Drift Monitor", "Focus"),
    ("MoveToTargetDoneEvent", "Navigation", "Align ZLP"),
    ("MoveToTargetDoneEvent", "Navigation", "Preview"),
    ("ChangePresetEvent", "Navigation", "Presets Manager"),
    ("MoveToTargetDoneEvent", "Navigation", "Presets Manager"),
    ("MoveToTargetDoneEvent", "Navigation", "Grid"),
    ("MoveToTargetDoneEvent", "Navigation", "Square"),
    ("MoveToTargetDoneEvent", "Navigation", "Z Focus"),
    ("MoveToTargetDoneEvent", "Navigation", "Hole"),
    ("MoveToTargetDoneEvent", "Navigation", "Focus"),
    ("MoveToTargetDoneEvent", "Navigation", "Exposure"),
    ("MoveToTargetDoneEvent", "Navigation", "Target Adjustment"),
    ("TransformTargetEvent", "Hole", "Target Adjustment"),
    ("ImageTargetListPublishEvent", "Hole", "Preview"),
    ("ChangePresetEvent", "Hole", "Presets Manager"),
    ("AcquisitionImagePublishEvent", "Hole", "Exposure Targeting"),
    ("TargetListDoneEvent", "Hole", "Hole Targeting"),
    ("ImageTargetListPublishEvent", "Hole", "Z Focus"),
    ("MoveToTargetEvent", "Hole", "Navigation"),
    ("PresetChangedEvent", "Presets Manager", "Align ZLP"),
    ("PresetChangedEvent", "Presets Manager", "Target Adjustment"),
    ("MoveToTargetEvent", "Presets Manager", "Navigation"),
    ("PresetChangedEvent", "Presets Manager", "Drift Monitor"),
    ("PresetChangedEvent", "Presets Manager", "Focus"),
    ("PresetChangedEvent", "Presets Manager", "Exposure"),
    ("PresetChangedEvent", "Presets Manager", "Hole"),
    ("PresetChangedEvent", "Presets Manager", "Square"),
    ("PresetChangedEvent", "Presets Manager", "Grid"),
    ("PresetChangedEvent", "Presets Manager", "Z Focus"),
    ("PresetChangedEvent", "Presets Manager", "Navigation"),
    ("PresetChangedEvent", "Presets Manager", "Beam Tilt"),
    ("PresetChangedEvent", "Presets Manager", "Preview"),
    ("PresetChangedEvent", "Presets Manager", "Beam Tilt Image"),
    ("TransformTargetEvent", "Z Focus", "Target Adjustment"),
    ("TargetListDoneEvent", "Z Focus", "Hole"),
    ("ChangePresetEvent", "Z Focus", "Presets Manager"),
    ("MoveToTargetEvent", "Z Focus", "Navigation"),
    ("ImageTargetListPublishEvent", "Grid Targeting", "Grid"),
    ("ChangePresetEvent", "Beam Tilt Image", "Presets Manager"),
    ("ChangePresetEvent", "Scope Control", "Presets Manager"),
    ("PresetChangedEvent", "Presets Manager", "Scope Control"),
]

_TABLES = {
    "ApplicationData": [("name", "text"), ("version", "int(20)"), ("hide", "tinyint(1)")],
    "BindingSpecData": [
        ("event class string", "text"),
        ("from node alias", "text"),
        ("to node alias", "text"),
        ("REF|ApplicationData|application", "int(20)"),
    ],
    "NodeSpecData": [
        ("class string", "text"),
        ("alias", "text"),
        ("launcher alias", "text"),
        ("SEQ|dependencies", "text"),
        ("REF|ApplicationData|application", "int(20)"),
    ],
}
_TIMESTAMP = "2026-01-01 00:00:00"


def _definition(name: str, fields: list[tuple[str, str]]) -> list[str]:
    out = [
        f' <sqltable name="{name}" >',
        '    <field name="DEF_id" type="int(16)" null="NOT NULL" extra="auto_increment" />',
        '    <field name="DEF_timestamp" type="timestamp" default="DEFAULT \'CURRENT_TIMESTAMP\'" '
        'null="NOT NULL" extra="on update CURRENT_TIMESTAMP" />',
    ]
    out += [f"    <field name={quoteattr(f)} type={quoteattr(t)} />" for f, t in fields]
    out.append("    <key>PRIMARY KEY (`DEF_id`)</key>")
    out.append("    <key>KEY `DEF_timestamp` (`DEF_timestamp`)</key>")
    if any(f.startswith("REF|") for f, _ in fields):
        out.append("    <key>KEY `REF|ApplicationData|application` (`REF|ApplicationData|application`)</key>")
    out.append("  </sqltable>")
    return out


def _row(name: str, def_id: int, values: list[tuple[str, object]]) -> list[str]:
    out = [
        f'    <sqltable name="{name}" >',
        f'        <field name="DEF_id" >{def_id}</field>',
        f'        <field name="DEF_timestamp" >{_TIMESTAMP}</field>',
    ]
    out += [f"        <field name={quoteattr(k)} >{escape(str(v))}</field>" for k, v in values]
    out.append("    </sqltable>")
    return out


def application_xml() -> str:
    """The application dump as text."""
    app_id = 1
    lines = [
        "<!--",
        "-",
        "- Application XML-Dump (ptolemy-leginon)",
        "-",
        f"- Application :{APPLICATION_NAME}",
        f"- Version     :{APPLICATION_VERSION}",
        "-",
        "-->",
        "",
        "<applicationdump>",
        " <definition>",
    ]
    for name, fields in _TABLES.items():
        lines += _definition(name, fields)
    lines += ["", " </definition>", " <data>", "  <!-- ApplicationData -->"]
    lines += _row(
        "ApplicationData", app_id, [("name", APPLICATION_NAME), ("version", APPLICATION_VERSION), ("hide", 0)]
    )
    lines.append("  <!-- BindingSpecData -->")
    for i, (event, src, dst) in enumerate(BINDINGS, start=1):
        lines += _row(
            "BindingSpecData",
            i,
            [
                ("event class string", event),
                ("from node alias", src),
                ("to node alias", dst),
                ("REF|ApplicationData|application", app_id),
            ],
        )
    lines.append("  <!-- NodeSpecData -->")
    for i, (cls, alias, launcher) in enumerate(NODES, start=1):
        lines += _row(
            "NodeSpecData",
            i,
            [
                ("class string", cls),
                ("alias", alias),
                ("launcher alias", launcher),
                ("SEQ|dependencies", "[]"),
                ("REF|ApplicationData|application", app_id),
            ],
        )
    lines += [" </data>", "</applicationdump>", ""]
    return "\n".join(lines)


def write_xml(path: str | Path = XML_PATH) -> Path:
    """Write the application dump (default: the packaged ``ptolemy_screening.xml``)."""
    from ptolemy_core.atomic import write_atomic

    return write_atomic(path, application_xml())


if __name__ == "__main__":  # pragma: no cover
    print(write_xml(sys.argv[1] if len(sys.argv) > 1 else XML_PATH))
