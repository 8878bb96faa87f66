//! RabbitMQ: connecting, declaring the topology, and publishing with confirms.
//!
//! The worker assumes any connection can vanish at any moment. A [`Session`]
//! is one connection with its channels; the pipeline's supervisor makes a new
//! one (re-declaring the topology) whenever the old one dies, and treats every
//! unconfirmed publish as unsent and every unacked delivery as "will be
//! redelivered". Nothing here retries on its own.
//!
//! A broker that stops answering (confirms that never come) is the one
//! failure a connection does not report by itself until its heartbeat runs
//! out (two minutes at RabbitMQ's default): publishing waits for confirms at
//! most until a deadline, and [`Publisher::abandon`] then closes the channel,
//! which makes the session look broken so the consumer opens a new one.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::join_all;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPHardError};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::ErrorKind;
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ExchangeKind, Queue,
};
use secrecy::{ExposeSecret, SecretString};

use crate::config::AmqpSettings;

/// The header a dead-lettered message carries to say why.
pub const REASON_HEADER: &str = "x-backoffice-reason";

/// The names the worker declares. Defaults are those of the message contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub command_queue: String,
    pub result_exchange: String,
    pub dead_letter_queue: String,
}

impl Topology {
    pub fn from_settings(settings: &AmqpSettings) -> Topology {
        Topology {
            command_queue: settings.command_queue.clone(),
            result_exchange: settings.result_exchange.clone(),
            dead_letter_queue: settings.dead_letter_queue.clone(),
        }
    }
}

/// One live connection: a channel to consume on and one, in confirm mode, to publish on.
pub struct Session {
    pub connection: Connection,
    pub consume_channel: Channel,
    pub publisher: Publisher,
}

impl Session {
    /// Connects and declares the topology (idempotently: declaring what exists is a no-op).
    pub async fn open(
        url: &SecretString,
        topology: &Topology,
        prefetch: u16,
    ) -> lapin::Result<Session> {
        let properties = ConnectionProperties::default().with_connection_name(
            format!(
                "backoffice-worker pid {} queue {}",
                std::process::id(),
                topology.command_queue
            )
            .into(),
        );
        let connection = Connection::connect(url.expose_secret(), properties).await?;
        let consume_channel = connection.create_channel().await?;
        declare(&consume_channel, topology).await?;
        consume_channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        let publish_channel = connection.create_channel().await?;
        publish_channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Session {
            connection,
            consume_channel,
            publisher: Publisher {
                channel: publish_channel,
            },
        })
    }

    /// Opens a session on the first node of `urls` that answers, starting at
    /// `start` and going round once. Returns the session and the index of
    /// its node, so that the caller can start at the next one when this
    /// session is lost (its node stopped, or is cut off). The error is the
    /// last node's.
    pub async fn open_any(
        urls: &[SecretString],
        start: usize,
        topology: &Topology,
        prefetch: u16,
    ) -> lapin::Result<(Session, usize)> {
        let mut last = None;
        for step in 0..urls.len() {
            let index = (start + step) % urls.len();
            match Session::open(&urls[index], topology, prefetch).await {
                Ok(session) => return Ok((session, index)),
                Err(error) => {
                    if urls.len() > 1 {
                        tracing::warn!(
                            node = %node_name(&urls[index]),
                            %error,
                            "cannot open a session on this node; trying the next"
                        );
                    }
                    last = Some(error);
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            lapin::Error::from(std::io::Error::other("no broker URL configured"))
        }))
    }

    pub async fn consume(&self, queue: &str, tag: &str) -> lapin::Result<Consumer> {
        self.consume_channel
            .basic_consume(
                queue.into(),
                tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
    }

    pub fn is_connected(&self) -> bool {
        self.connection.status().connected()
            && self.consume_channel.status().connected()
            && self.publisher.channel.status().connected()
    }

    pub async fn close(&self) {
        let _ = self.connection.close(200, "worker stopping".into()).await;
    }
}

/// Where an AMQP URL points (host, port, virtual host), without its
/// credentials: for logs and messages.
pub fn node_name(url: &SecretString) -> String {
    match url::Url::parse(url.expose_secret()) {
        Ok(url) => format!(
            "{}:{}{}",
            url.host_str().unwrap_or("?"),
            url.port().unwrap_or(5672),
            url.path()
        ),
        Err(_) => "the configured URL".into(),
    }
}

/// Declares the quorum command queue, the topic result exchange and the
/// dead-letter queue.
pub async fn declare(channel: &Channel, topology: &Topology) -> lapin::Result<()> {
    let mut quorum = FieldTable::default();
    quorum.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(
            topology.command_queue.as_str().into(),
            durable,
            quorum.clone(),
        )
        .await?;
    channel
        .queue_declare(topology.dead_letter_queue.as_str().into(), durable, quorum)
        .await?;
    declare_result_exchange(channel, &topology.result_exchange).await
}

/// A durable topic exchange, as the result exchange is declared.
pub async fn declare_result_exchange(channel: &Channel, exchange: &str) -> lapin::Result<()> {
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
}

/// A queue of this connection's own: named by the server, exclusive, and
/// gone with the connection. Where a process reads answers meant for it.
pub async fn private_queue(channel: &Channel) -> lapin::Result<Queue> {
    channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
}

/// Reads `queue` without acknowledgements: a private queue has no other
/// reader to hand a message back to.
pub async fn consume_unacked(
    channel: &Channel,
    queue: &Queue,
    tag: &str,
) -> lapin::Result<Consumer> {
    channel
        .basic_consume(
            queue.name().as_str().into(),
            tag.into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
}

/// Every message `exchange` routes from now on: a [`private_queue`] bound
/// to every routing key, read without acknowledgements.
pub async fn consume_all(channel: &Channel, exchange: &str, tag: &str) -> lapin::Result<Consumer> {
    let queue = private_queue(channel).await?;
    channel
        .queue_bind(
            queue.name().as_str().into(),
            exchange.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    consume_unacked(channel, &queue, tag).await
}

/// A message to publish persistently.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub exchange: String,
    pub routing_key: String,
    pub body: Vec<u8>,
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
    pub headers: Vec<(String, String)>,
    /// Whether the broker must be able to route it (a result event must reach
    /// its exchange; a reply to a vanished `reply_to` queue need not).
    pub content_type: &'static str,
}

impl Outgoing {
    pub fn json(exchange: &str, routing_key: &str, body: Vec<u8>) -> Outgoing {
        Outgoing {
            exchange: exchange.to_string(),
            routing_key: routing_key.to_string(),
            body,
            message_id: None,
            correlation_id: None,
            headers: Vec::new(),
            content_type: "application/json",
        }
    }
}

/// Messages sent and their confirms still to come ([`Publisher::send_all`]).
pub struct Sending {
    pending: Vec<Result<lapin::PublisherConfirm, PublishError>>,
    deadline: tokio::time::Instant,
    within: Duration,
}

impl Sending {
    /// Waits for the confirms, until the deadline set when sending began. One
    /// result per message, in the order they were sent.
    pub async fn confirmed(self) -> Vec<Result<(), PublishError>> {
        let Sending {
            pending,
            deadline,
            within,
        } = self;
        join_all(pending.into_iter().map(|sent| async move {
            match sent {
                Ok(confirm) => match tokio::time::timeout_at(deadline, confirm).await {
                    Ok(Ok(confirmation)) if confirmation.is_ack() => Ok(()),
                    Ok(Ok(_)) => Err(PublishError::Nacked),
                    Ok(Err(e)) => Err(PublishError::Broker(e)),
                    Err(_) => Err(PublishError::ConfirmTimeout(within)),
                },
                Err(e) => Err(e),
            }
        }))
        .await
    }
}

/// The publishing channel, in confirm mode.
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
}

/// How long [`Publisher::publish`] waits for a confirm when the caller does not say.
pub const DEFAULT_CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("broker refused the message (nack)")]
    Nacked,
    #[error("broker connection failed: {0}")]
    Broker(#[from] lapin::Error),
    #[error("message cannot be published: {0}")]
    Unroutable(String),
    #[error("no confirm from the broker within {0:?}")]
    ConfirmTimeout(Duration),
}

impl PublishError {
    /// Whether the broker itself said no while this message was unconfirmed:
    /// it closed the channel or the connection with an AMQP error (a message
    /// over its size limit is 406 PRECONDITION_FAILED; an exchange that does
    /// not exist, 404). Such an error may still be another message's fault,
    /// or the broker's (permissions), so the relay only gives up on a message
    /// refused on its own, again and again, while others got through. A
    /// connection closed by an operator or a stopping broker (320), a lost
    /// connection, a nack (the broker's own trouble) or a timeout is not a
    /// refusal: nothing is wrong with the message.
    pub fn is_refusal(&self) -> bool {
        match self {
            PublishError::Broker(error) => match error.kind() {
                ErrorKind::ProtocolError(amqp) => !matches!(
                    amqp.kind(),
                    AMQPErrorKind::Hard(AMQPHardError::CONNECTIONFORCED)
                ),
                _ => false,
            },
            PublishError::Unroutable(_) => true,
            PublishError::Nacked | PublishError::ConfirmTimeout(_) => false,
        }
    }
}

/// Whether `text` fits an AMQP short string (255 bytes).
pub fn fits_short_string(text: &str) -> bool {
    text.len() <= 255
}

impl Publisher {
    /// Publishes every message, then waits for all their confirms at once (the
    /// broker confirms persistent messages after the disk write, so waiting for
    /// each in turn would serialise on that latency). One result per message;
    /// whatever is not confirmed `within` (sending included) is
    /// [`PublishError::ConfirmTimeout`]: unsent, as far as the caller knows.
    pub async fn publish_all(
        &self,
        messages: &[Outgoing],
        within: Duration,
    ) -> Vec<Result<(), PublishError>> {
        self.send_all(messages, within).await.confirmed().await
    }

    /// The first half of [`Publisher::publish_all`]: sends every message and
    /// returns their confirms still to come, so that the caller can publish
    /// more while the broker writes these to disk. Confirms are per delivery
    /// tag, so several [`Sending`]s can be outstanding on one channel; when
    /// the channel closes (abandoned after a timeout, closed by the broker,
    /// connection lost) lapin fails every outstanding confirm, and a confirm
    /// that never comes is cut by each `Sending`'s own deadline.
    pub async fn send_all(&self, messages: &[Outgoing], within: Duration) -> Sending {
        let deadline = tokio::time::Instant::now() + within;
        let mut pending = Vec::with_capacity(messages.len());
        for message in messages {
            pending.push(
                tokio::time::timeout_at(deadline, self.send(message))
                    .await
                    .unwrap_or(Err(PublishError::ConfirmTimeout(within))),
            );
        }
        Sending {
            pending,
            deadline,
            within,
        }
    }

    /// One message, confirmed within [`DEFAULT_CONFIRM_TIMEOUT`].
    pub async fn publish(&self, message: &Outgoing) -> Result<(), PublishError> {
        self.publish_all(std::slice::from_ref(message), DEFAULT_CONFIRM_TIMEOUT)
            .await
            .pop()
            .expect("one result per message")
    }

    /// Whether the channel can still publish.
    pub fn is_open(&self) -> bool {
        self.channel.status().connected()
    }

    /// Gives up on this channel after a broker stopped confirming: closing it
    /// (without waiting long for a broker that does not answer) marks the
    /// session broken, and the consumer's supervision opens a new one. The
    /// messages it did not confirm are unsent as far as anyone knows.
    pub async fn abandon(&self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            self.channel
                .close(200, "no confirms in time; reopening".into()),
        )
        .await;
    }

    async fn send(&self, message: &Outgoing) -> Result<lapin::PublisherConfirm, PublishError> {
        let mut properties = BasicProperties::default()
            .with_content_type(message.content_type.into())
            .with_delivery_mode(2)
            .with_timestamp(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
            );
        // AMQP short strings hold at most 255 bytes. A property that does not fit
        // (a rejected command's over-long id) is left out rather than failing the
        // whole publish: the event body carries the id in full.
        if let Some(id) = message
            .message_id
            .as_deref()
            .filter(|id| fits_short_string(id))
        {
            properties = properties.with_message_id(ShortString::from(id));
        }
        if let Some(id) = message
            .correlation_id
            .as_deref()
            .filter(|id| fits_short_string(id))
        {
            properties = properties.with_correlation_id(ShortString::from(id));
        }
        if !fits_short_string(&message.exchange) || !fits_short_string(&message.routing_key) {
            return Err(PublishError::Unroutable(format!(
                "exchange or routing key longer than 255 bytes ({} / {})",
                message.exchange.len(),
                message.routing_key.len()
            )));
        }
        if !message.headers.is_empty() {
            let mut headers = FieldTable::default();
            for (k, v) in &message.headers {
                headers.insert(
                    k.as_str().into(),
                    AMQPValue::LongString(LongString::from(v.as_str())),
                );
            }
            properties = properties.with_headers(headers);
        }
        Ok(self
            .channel
            .basic_publish(
                message.exchange.as_str().into(),
                message.routing_key.as_str().into(),
                BasicPublishOptions::default(),
                &message.body,
                properties,
            )
            .await?)
    }
}

/// The properties of a delivery as JSON, for the dead-letter record.
pub fn properties_json(properties: &BasicProperties) -> serde_json::Value {
    let text = |v: &Option<ShortString>| v.as_ref().map(|s| s.as_str().to_string());
    let headers = properties.headers().as_ref().map(|table| {
        table
            .inner()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), amqp_value_json(v)))
            .collect::<serde_json::Map<_, _>>()
    });
    serde_json::json!({
        "content_type": text(properties.content_type()),
        "message_id": text(properties.message_id()),
        "correlation_id": text(properties.correlation_id()),
        "reply_to": text(properties.reply_to()),
        "delivery_mode": properties.delivery_mode(),
        "headers": headers,
    })
}

fn amqp_value_json(value: &AMQPValue) -> serde_json::Value {
    match value {
        AMQPValue::LongString(s) => {
            serde_json::Value::String(String::from_utf8_lossy(s.as_bytes()).into_owned())
        }
        AMQPValue::ShortString(s) => serde_json::Value::String(s.as_str().to_string()),
        AMQPValue::Boolean(b) => serde_json::Value::Bool(*b),
        AMQPValue::LongLongInt(i) => serde_json::json!(i),
        AMQPValue::LongInt(i) => serde_json::json!(i),
        AMQPValue::ShortInt(i) => serde_json::json!(i),
        AMQPValue::LongUInt(i) => serde_json::json!(i),
        other => serde_json::Value::String(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::protocol::{AMQPError, AMQPSoftError};

    fn closed_with(kind: AMQPErrorKind) -> PublishError {
        PublishError::Broker(lapin::Error::from(ErrorKind::ProtocolError(
            AMQPError::new(kind, "closed".into()),
        )))
    }

    #[test]
    fn only_the_broker_saying_no_is_a_refusal() {
        assert!(closed_with(AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)).is_refusal());
        assert!(closed_with(AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)).is_refusal());
        assert!(closed_with(AMQPErrorKind::Hard(AMQPHardError::INTERNALERROR)).is_refusal());
        assert!(PublishError::Unroutable("long".into()).is_refusal());
        // An operator closing the connection, a stopping broker, a lost
        // connection, a nack, a timeout: nothing wrong with the message.
        assert!(!closed_with(AMQPErrorKind::Hard(AMQPHardError::CONNECTIONFORCED)).is_refusal());
        assert!(
            !PublishError::Broker(lapin::Error::from(std::io::Error::from(
                std::io::ErrorKind::ConnectionReset
            )))
            .is_refusal()
        );
        assert!(!PublishError::Nacked.is_refusal());
        assert!(!PublishError::ConfirmTimeout(Duration::from_secs(30)).is_refusal());
    }
}
