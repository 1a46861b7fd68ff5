"""The controller process: manager, leader gating, HTTP server and metric definitions."""
