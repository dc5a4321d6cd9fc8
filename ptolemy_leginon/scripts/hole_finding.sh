# hole_finding.sh -- Ptolemy-compatible hole finder for Leginon (ptolemy-leginon).
#
# Leginon's ScoreTargetFinder SOURCES this file once per image:
#     source hole_finding.sh <session>_<node alias> <image.mrc> <session image folder>
# and reads the FIRST line of <folder>/<session>_<node alias>.json: a JSON list of
# {"center": [x, y], "score": s, ...}, highest score first.
#
# Coordinates: ScoreTargetFinder uses these centres as positions on its SHRUNK
# image (the image binned by b = 1, 2, 4 or 8 until the longest side is at most
# 1440 px, after cropping Leginon's shrink offset). So "center" and "vertices"
# here are in that frame: x = (col - offset_col) / b, y = (row - offset_row) / b,
# and Leginon's targets land exactly on our full-resolution hole centres, which
# are kept as "full_center". (`ptolemy medmag` prints full-resolution pixels.)
# The score is also written under $PTOLEMY_SCORE_KEY when Leginon's `score key`
# setting is not "score". With fewer than two holes nothing is written (Leginon
# treats a missing file as "no holes"; a list of 0 or 1 holes makes it raise).
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
__ptolemy_leginon_run medmag "$@"
set -- "$?"
unset -f __ptolemy_leginon_run
return "$1" 2>/dev/null || exit "$1"
