use std::collections::HashSet;
use std::time::Duration;

use common::queue::{MAX_MESSAGE_BYTES, Queue, QueueError};

use super::receive_within;

pub async fn contract(queue: &dyn Queue, dead_letter: &dyn Queue) {
    delivery(queue).await;
    redelivery(queue).await;
    delay(queue).await;
    dead_lettering(queue, dead_letter).await;
}

async fn delivery(queue: &dyn Queue) {
    assert!(
        queue
            .receive(10, Duration::from_secs(30), Duration::ZERO)
            .await
            .expect("empty")
            .is_empty()
    );
    let bodies: Vec<String> = (0..13).map(|i| format!("{{\"job\":{i}}}")).collect();
    queue.send_batch(&bodies, Duration::ZERO).await.expect("send");
    let mut seen = HashSet::new();
    while seen.len() < 13 {
        let got = receive_within(queue, Duration::from_secs(30), Duration::from_secs(5)).await;
        assert!(!got.is_empty(), "only {} of 13 arrived", seen.len());
        assert!(got.len() <= 10);
        for message in got {
            assert_eq!(message.receive_count, 1);
            assert!(seen.insert(message.body.clone()), "delivered twice: {}", message.body);
            queue.ack(&message.receipt).await.expect("ack");
        }
    }
    assert_eq!(seen, bodies.into_iter().collect());
    assert!(
        queue
            .receive(10, Duration::from_secs(30), Duration::ZERO)
            .await
            .expect("drained")
            .is_empty()
    );
    assert!(matches!(
        queue.send("x".repeat(MAX_MESSAGE_BYTES + 1)).await,
        Err(QueueError::TooLarge(_))
    ));
}

async fn redelivery(queue: &dyn Queue) {
    queue.send("again".into()).await.expect("send");
    let first = receive_within(queue, Duration::from_secs(1), Duration::from_secs(5)).await;
    assert_eq!(first.len(), 1);
    // Invisible while its visibility lasts, delivered again after, with its count.
    assert!(
        queue
            .receive(10, Duration::from_secs(30), Duration::ZERO)
            .await
            .expect("hidden")
            .is_empty()
    );
    let second = receive_within(queue, Duration::from_secs(30), Duration::from_secs(5)).await;
    assert_eq!(second.len(), 1);
    assert_eq!(
        (second[0].id.as_str(), second[0].receive_count),
        (first[0].id.as_str(), 2)
    );

    // Extending keeps it hidden past its first visibility.
    queue
        .extend(&second[0].receipt, Duration::from_secs(30))
        .await
        .expect("extend");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        queue
            .receive(10, Duration::from_secs(30), Duration::ZERO)
            .await
            .expect("still hidden")
            .is_empty()
    );
    queue.ack(&second[0].receipt).await.expect("ack");

    // Extending to zero hands it out again at once.
    queue.send("release".into()).await.expect("send");
    let first = receive_within(queue, Duration::from_secs(30), Duration::from_secs(5)).await;
    assert_eq!(first.len(), 1);
    queue.extend(&first[0].receipt, Duration::ZERO).await.expect("release");
    let again = receive_within(queue, Duration::from_secs(30), Duration::from_secs(5)).await;
    assert_eq!((again.len(), again[0].receive_count), (1, 2));
    queue.ack(&again[0].receipt).await.expect("ack");
}

async fn delay(queue: &dyn Queue) {
    queue
        .send_batch(&["later".to_owned()], Duration::from_secs(2))
        .await
        .expect("send delayed");
    assert!(
        queue
            .receive(10, Duration::from_secs(30), Duration::ZERO)
            .await
            .expect("not yet")
            .is_empty()
    );
    let got = receive_within(queue, Duration::from_secs(30), Duration::from_secs(6)).await;
    assert_eq!(got.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(), ["later"]);
    queue.ack(&got[0].receipt).await.expect("ack");
}

async fn dead_lettering(queue: &dyn Queue, dead_letter: &dyn Queue) {
    queue.send("poison".into()).await.expect("send");
    // Delivered twice (the maximum), never acknowledged...
    for attempt in 1..=2 {
        let got = receive_within(queue, Duration::from_secs(30), Duration::from_secs(5)).await;
        assert_eq!(got.len(), 1, "delivery {attempt}");
        assert_eq!(got[0].receive_count, attempt);
        queue.extend(&got[0].receipt, Duration::ZERO).await.expect("fail it");
    }
    // ...then it is moved to the dead-letter queue instead of a third delivery.
    assert!(
        queue
            .receive(10, Duration::from_secs(30), Duration::from_secs(1))
            .await
            .expect("gone")
            .is_empty()
    );
    let dead = receive_within(dead_letter, Duration::from_secs(30), Duration::from_secs(5)).await;
    assert_eq!(dead.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(), ["poison"]);
}
