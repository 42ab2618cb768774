"""Browser tests: Playwright for Python driving Debian's Chromium (/usr/bin/chromium) against the live server."""
