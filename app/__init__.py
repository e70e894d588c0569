"""eventservice: session analytics events over WebSocket, HTTP and Server-Sent Events."""
