"""The tap as an Airbyte source: `source-lms-unified spec|check|discover|read`.

Same streams, settings, state and errors as the Singer tap: an output-side message writer
(`writer.AirbyteWriter`) translates the tap's Singer messages into Airbyte messages, and a
thin CLI (`cli`) maps Airbyte's commands, configured catalog and state onto the tap.
`bridge` lists everything taken from the tap.
"""
