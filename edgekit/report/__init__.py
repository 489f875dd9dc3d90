"""Views of results: terminal tables now; HTML, CSV and Markdown later."""
