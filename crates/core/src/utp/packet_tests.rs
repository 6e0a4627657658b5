//! Codec round trips and edge cases of the packet layer and the buffers.
