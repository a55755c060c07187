"""Channels: how an action reaches a customer."""

from ceap.channels.base import Channel, ChannelConfig, Message, SendJournal, SendResult

__all__ = ["Channel", "ChannelConfig", "Message", "SendJournal", "SendResult"]
