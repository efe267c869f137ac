"""The chat's WebSocket consumers."""

from channels.generic.websocket import AsyncWebsocketConsumer


class RoomConsumer(AsyncWebsocketConsumer):
    """A chat room: each text message goes to every member of the room."""

    async def connect(self) -> None:
        self.group = "room." + self.scope["url_route"]["kwargs"]["room"]
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None) -> None:
        if text_data is not None:
            message = {"type": "chat.message", "text": text_data}
            await self.channel_layer.group_send(self.group, message)

    async def chat_message(self, event: dict) -> None:
        await self.send(text_data=event["text"])


class EchoConsumer(AsyncWebsocketConsumer):
    """Send each message back as it came, text or binary; the text
    ``close CODE`` closes the socket with that code instead."""

    async def receive(self, text_data=None, bytes_data=None) -> None:
        if text_data is not None and text_data.startswith("close "):
            await self.close(code=int(text_data.split()[1]))
        else:
            await self.send(text_data=text_data, bytes_data=bytes_data)
