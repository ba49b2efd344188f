"""What a video file's container says, read from its bytes without decoding it.

`container` tells the kind of container by its first bytes, `mp4_boxes` walks an MP4's or
QuickTime file's boxes, and `display_matrix` says whether such a file is shown mirrored and
how to flip OpenCV's frames into the ones a player shows. Apart from `video` because the
client's `videodag render` orients frames with this same code: these modules import nothing
else of videodag_service (nor gRPC), so the client loads none of the decoding engine.
"""
