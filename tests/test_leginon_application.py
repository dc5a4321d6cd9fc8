"""The packaged Smart Leginon application XML and the package data the scripts need."""

import xml.dom.minidom as dom
from importlib import resources

from ptolemy_leginon import application


def _rows(doc, table):
    data = doc.getElementsByTagName("data")[0]
    out = []
    for t in data.getElementsByTagName("sqltable"):
        if t.attributes["name"].value == table:
            out.append(
                {
                    f.attributes["name"].value: (f.firstChild.data if f.firstChild else "")
                    for f in t.getElementsByTagName("field")
                }
            )
    return out


def test_packaged_xml_is_current_and_consistent():
    text = resources.files("ptolemy_leginon").joinpath("ptolemy_screening.xml").read_text()
    assert text == application.application_xml()  # regenerate with python -m ptolemy_leginon.application
    doc = dom.parseString(text)  # the parser Leginon's importexport uses
    nodes = _rows(doc, "NodeSpecData")
    aliases = {n["alias"]: n["class string"] for n in nodes}
    assert aliases["Square Targeting"] == "PtolemySquareFinder"
    assert aliases["Exposure Targeting"] == "PtolemyHoleFinder"
    assert len(aliases) == len(nodes)  # unique aliases
    binds = _rows(doc, "BindingSpecData")
    assert binds and all(b["from node alias"] in aliases and b["to node alias"] in aliases for b in binds)
    # the square finder feeds the square acquisition; hole images feed the hole finder
    pairs = {(b["event class string"], b["from node alias"], b["to node alias"]) for b in binds}
    assert ("AcquisitionImagePublishEvent", "Grid", "Square Targeting") in pairs
    assert ("ImageTargetListPublishEvent", "Square Targeting", "Square") in pairs
    assert ("AcquisitionImagePublishEvent", "Hole", "Exposure Targeting") in pairs
    assert ("ImageTargetListPublishEvent", "Exposure Targeting", "Exposure") in pairs
    app = _rows(doc, "ApplicationData")
    assert app[0]["name"] == application.APPLICATION_NAME


def test_scripts_are_package_data():
    for name in ("sq_finding.sh", "hole_finding.sh"):
        text = resources.files("ptolemy_leginon.scripts").joinpath(name).read_text()
        assert 'return "$1"' in text and "set -e" not in text and "@PTOLEMY_PYTHON@" in text
