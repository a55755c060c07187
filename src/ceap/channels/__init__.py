"""Channels: how an action reaches a customer."""

from ceap.channels.base import Channel, ChannelConfig, Message, SendResult

__all__ = ["Channel", "ChannelConfig", "Message", "SendResult"]
