"""The reference parser for FramingDifferentialTests: h11, as a server, judges each request.

Reads one hex-encoded request per line from the file named by its argument and prints, per
line, "accept" (h11 read the whole message, body included, without error), "reject" (h11 raised
a protocol error) or "incomplete" (h11 wants more bytes)."""
import sys

import h11

for line in open(sys.argv[1]):
    data = bytes.fromhex(line.strip())
    connection = h11.Connection(our_role=h11.SERVER)
    verdict = "incomplete"
    try:
        connection.receive_data(data)
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                break
            if isinstance(event, h11.EndOfMessage):
                verdict = "accept"
                break
            if not isinstance(event, (h11.Request, h11.Data)):
                # ConnectionClosed, which h11 repeats for ever: the message never ended.
                break
    except h11.RemoteProtocolError:
        verdict = "reject"
    print(verdict)
