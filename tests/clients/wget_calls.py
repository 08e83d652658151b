"""The curl_calls.py scenarios, made by Debian's wget (GnuTLS) instead of curl.

Usage: wget_calls.py SCENARIO...
"""

import os

os.environ["HTTP_TOOL"] = "wget"

import curl_calls  # noqa: E402,F401  (runs the scenarios named on the command line)
