# sq_finding.sh -- Ptolemy-compatible atlas square finder for Leginon (ptolemy-leginon).
#
# Leginon's MosaicScoreTargetFinder SOURCES this file once per atlas tile:
#     source sq_finding.sh <session>_<tile id> <tile.mrc> <folder of tile.mrc>
# and reads the FIRST line of <folder>/<session>_<tile id>.json: a JSON list of
# {"center": [x, y], "vertices": [[x, y] x4], "area", "brightness", "score"} in
# pixels of the tile (x = column, y = row), highest score first.
#
# Because it runs inside Leginon's shell it never calls `exit`, sets no shell
# options, leaves no variables or functions behind and quotes every path. The
# result is written atomically (temporary file in the same folder + rename); on
# failure nothing is written, one line goes to stderr and the status is non-zero.
#
# Python: $PTOLEMY_PYTHON, else the interpreter that ran `ptolemy leginon scripts`.
__ptolemy_leginon_run() {
    local __kind="$1" __py __job __image __out
    shift
    __py="${PTOLEMY_PYTHON:-@PTOLEMY_PYTHON@}"
    case "$__py" in
        @*@) __py="python3" ;;  # template never installed with `ptolemy leginon scripts`
    esac
    if [ "$#" -lt 3 ]; then
        printf '%s\n' "ptolemy-leginon $__kind: error: usage: source SCRIPT JOB IMAGE.mrc OUTDIR" >&2
        return 2
    fi
    __job="$1"
    if [ "$#" -eq 3 ]; then
        __image="$2"
        __out="$3/$__job.json"
        "$__py" -m ptolemy_leginon.runscript "$__kind" -- "$__image" "$__out"
    else
        # Leginon does not quote its command line: a space in the session path
        # splits IMAGE and OUTDIR into several words; let Python rejoin them.
        "$__py" -m ptolemy_leginon.runscript "$__kind" --rejoin -- "$@"
    fi
}
__ptolemy_leginon_run lowmag "$@"
set -- "$?"
unset -f __ptolemy_leginon_run
return "$1" 2>/dev/null || exit "$1"
